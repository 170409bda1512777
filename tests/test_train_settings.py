"""The Train tab's settings table: widgets offer only what this server can do."""

from types import SimpleNamespace

from cxr.train.presets import apply_preset
from demo.context import AppContext
from demo.train_settings import SETTINGS


def _offered(field: str, has_masks: bool) -> list[str]:
    setting = next(s for s in SETTINGS if s.field == field)
    server = SimpleNamespace(has_masks=has_masks)  # a server whose dataset has lung masks, or not
    server.offers_hiding = lambda mode: AppContext.offers_hiding(server, mode)
    return [value for _, value in setting.choices(apply_preset("fast-cpu"), server)]


def test_hiding_the_lung_masks_is_offered_only_when_the_dataset_has_masks():
    assert _offered("hide_lungs", has_masks=True) == ["none", "box", "mask"]
    assert _offered("hide_lungs", has_masks=False) == ["none", "box"]


def test_every_number_widget_takes_its_range_from_the_configs_bounds():
    import gradio as gr

    from cxr.train.config import BOUNDS, TrainConfig

    numbers = [s for s in SETTINGS if s.field in BOUNDS]
    assert len(numbers) == 10  # image size, batch size, lr, epochs, max steps, budget, eval every, target, smoothing, seed
    with gr.Blocks():
        for s in numbers:
            widget = s.widget(getattr(TrainConfig(), s.field))
            assert (widget.minimum, widget.maximum) == BOUNDS[s.field][:2], s.field
