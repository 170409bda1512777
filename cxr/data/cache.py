"""Decoded images in memory, and the batches served from them.

`ImageCache` decodes each image once, at the training resolution, and keeps it in memory as uint8, so later epochs
cost no decoding at all; a file that will not decode is skipped and remembered, never fatal. `start_filling`
decodes ahead of use in worker processes, each chunk of images crossing back as one stacked tensor. With
`masks=True` it keeps each image's lung mask too (for hiding the lungs, see `cxr.data.lungs`); a missing mask is
refused, since training would then see lungs it should not. `iterate_batches` serves (images, labels) in order.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import torch

from cxr.data.images import read_xray
from cxr.data.lungs import HideLungs, expected_mask_path, hide_pixels, mask_path, read_mask
from cxr.data.transforms import prepare_image


@dataclass
class ImageCache:
    """Decoded images at one resolution, filled on first use. Unreadable files land in `bad`, with the reason.

    On a GPU pass `device="cuda"`: the uint8 images then live on the GPU (1 GB for the whole database at 224 px),
    so a training step copies nothing from host to device. `masks=True` also keeps the lung masks (`get_masks`),
    0/1 uint8 at the same size, decoded once each like the images."""

    files: Sequence[Path]
    image_size: int
    device: "str | torch.device" = "cpu"
    bad: dict[int, str] = field(default_factory=dict)
    masks: bool = False  # keep each image's lung mask (Kaggle v4 `masks/` folder), for hide-lungs mode "mask"

    def __post_init__(self) -> None:
        # On the CPU torch.empty does not touch its pages: memory is only used as images are cached.
        shape = (len(self.files), 1, self.image_size, self.image_size)
        self._images = torch.empty(shape, dtype=torch.uint8, device=self.device)
        self._filled = bytearray(len(self.files))
        self._masks = torch.empty(shape, dtype=torch.uint8, device=self.device) if self.masks else None
        self._mask_filled = bytearray(len(self.files) if self.masks else 0)
        self._ready, self._stop = threading.Condition(), threading.Event()  # background decoding (start_filling)
        self._queued: set[int] = set()
        self._filler: threading.Thread | None = None

    def _store(self, i: int, image: torch.Tensor) -> None:
        self._images[i] = image.to(self._images.device)
        self._filled[i] = 1

    def _decode(self, i: int) -> None:
        try:
            self._store(i, prepare_image(read_xray(self.files[i], max_side=4 * self.image_size), self.image_size))
        except ValueError as e:
            self.bad[i] = str(e)

    def get(self, ids: Sequence[int]) -> tuple[torch.Tensor, list[int]]:
        """uint8 images [n, 1, S, S] for the readable ones among `ids`, and which ids those are."""
        for i in ids:
            if not self._filled[i] and i not in self.bad and i in self._queued:
                self._wait_for(i)  # on its way from the background decoding
            if not self._filled[i] and i not in self.bad:
                self._decode(i)
        ok = [i for i in ids if self._filled[i]]
        return self._images[ok], ok

    def get_masks(self, ids: Sequence[int]) -> torch.Tensor:
        """uint8 lung masks [n, 1, S, S] of 0/1 for `ids` (pass the ids `get` returned). Raises ValueError naming
        the file when a mask is missing or unreadable, or when the cache was made without `masks=True`."""
        if self._masks is None:
            raise ValueError("this image cache keeps no lung masks; make it with ImageCache(..., masks=True)")
        for i in ids:
            if not self._mask_filled[i]:
                self._store_mask(i, _decode_mask(self.files[i], self.image_size))
        return self._masks[list(ids)]

    def _store_mask(self, i: int, mask: torch.Tensor) -> None:
        assert self._masks is not None
        self._masks[i] = mask.to(self._masks.device)
        self._mask_filled[i] = 1

    def start_filling(self, order: Sequence[int], workers: int) -> None:
        """Decode `order` ahead of use, in that order, in `workers` processes driven by a background thread.

        Training starts at once instead of after the whole set is decoded: `get` takes what is ready and waits
        only for images still on their way (on a GPU, decoding the 21,000-image database takes longer than two
        epochs of training, so the first epoch overlaps with it). Call `stop_filling` when done."""
        todo = [i for i in order if not self._filled[i] and i not in self.bad]
        if not todo or workers <= 0 or self._filler is not None:
            return
        self._stop.clear()
        self._queued = set(todo)
        self._filler = threading.Thread(target=self._fill_loop, args=(todo, workers), name="cxr-decode", daemon=True)
        self._filler.start()

    def stop_filling(self) -> None:
        """Stop the background decoding (its worker processes end) and wait for its thread."""
        if self._filler is None:
            return
        self._stop.set()
        self._filler.join()
        self._filler = None

    def _fill_loop(self, todo: list[int], workers: int) -> None:
        try:
            # Each worker hands back a chunk as one stacked tensor: passing every image on its own (a shared-memory
            # handle each) cost this thread about 1 ms per image, which capped 15 decoders at ~1,200 images/s.
            # In flight: 2 chunks of 32 per worker, 50 KB an image at 224 px: 48 MB of shared memory for 15
            # workers, within the 64 MB a container often has (twice that with lung masks, as before chunks).
            loader = torch.utils.data.DataLoader(_Decode(self.files, self.image_size, todo, self.masks),
                                                 batch_size=32, num_workers=workers, collate_fn=_Chunk.of,
                                                 prefetch_factor=2)
            for chunk in loader:
                if self._stop.is_set():
                    break
                if chunk.ids:  # one copy per chunk (to the GPU, when the cache lives there)
                    self._images[torch.tensor(chunk.ids, device=self._images.device)] = chunk.images.to(self._images.device)
                if chunk.mask_ids and self._masks is not None:  # a missing mask is decoded, and refused, by get_masks
                    self._masks[torch.tensor(chunk.mask_ids, device=self._masks.device)] = chunk.masks.to(self._masks.device)
                with self._ready:
                    self.bad.update(chunk.bad)
                    for i in chunk.ids:
                        self._filled[i] = 1
                    for i in chunk.mask_ids:
                        self._mask_filled[i] = 1
                    self._ready.notify_all()
        finally:  # finished, stopped or failed: `get` decodes whatever is still missing itself
            with self._ready:
                self._queued = set()
                self._ready.notify_all()

    def _wait_for(self, i: int) -> None:
        with self._ready:
            self._ready.wait_for(lambda: self._filled[i] or i in self.bad or i not in self._queued)

    def bad_report(self) -> str:
        if not self.bad:
            return ""
        names = ", ".join(Path(self.files[i]).name for i in list(self.bad)[:3])
        more = f" and {len(self.bad) - 3} more" if len(self.bad) > 3 else ""
        return f"skipped {len(self.bad)} unreadable file{'s' if len(self.bad) > 1 else ''}: {names}{more}"


def _decode_mask(image_file: "str | Path", image_size: int) -> torch.Tensor:
    path = mask_path(image_file)
    if path is None:
        where = expected_mask_path(image_file)
        looked = f"looked for {where}" if where is not None else "it is not in an images/ folder"
        raise ValueError(
            f"no lung mask for {Path(image_file).name} ({looked}); hide-lungs mode 'mask' needs one per image"
        )
    return read_mask(path, image_size)


class _Decode(torch.utils.data.Dataset):
    def __init__(self, files: Sequence[Path], image_size: int, ids: Sequence[int], masks: bool = False):
        self.files, self.image_size, self.ids, self.masks = files, image_size, list(ids), masks

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> tuple[int, "torch.Tensor | None", str, "torch.Tensor | None"]:
        """(id, image or None, why not, mask or None): errors travel back as text, raised in the parent."""
        i = self.ids[k]
        try:
            image = prepare_image(read_xray(self.files[i], max_side=4 * self.image_size), self.image_size)
        except ValueError as e:
            return i, None, str(e), None
        if not self.masks:
            return i, image, "", None
        try:
            return i, image, "", _decode_mask(self.files[i], self.image_size)
        except ValueError:
            return i, image, "", None  # `get_masks` decodes it again and says why


class _Chunk(NamedTuple):
    """A worker's decoded images, stacked so they cross to the training process as one tensor."""

    ids: list[int]  # the images decoded, in order
    images: "torch.Tensor | None"  # [len(ids), 1, S, S] uint8
    bad: dict[int, str]  # unreadable files: why
    mask_ids: list[int]
    masks: "torch.Tensor | None"

    @staticmethod
    def of(items: list[tuple[int, "torch.Tensor | None", str, "torch.Tensor | None"]]) -> "_Chunk":
        good = [(i, img, mask) for i, img, _, mask in items if img is not None]
        with_mask = [(i, mask) for i, _, mask in good if mask is not None]
        return _Chunk(ids=[i for i, _, _ in good], images=torch.stack([img for _, img, _ in good]) if good else None,
                      bad={i: err for i, img, err, _ in items if img is None}, mask_ids=[i for i, _ in with_mask],
                      masks=torch.stack([m for _, m in with_mask]) if with_mask else None)


def iterate_batches(
    cache: ImageCache, ids: Sequence[int], labels: Sequence[int], batch_size: int, hide: HideLungs | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 images, labels) batches over `ids` in the given order; unreadable files are left out.

    With `hide` the hidden region is already black in the images (they are not augmented, so that is the same as
    hiding in `to_model_input`): validation and test see exactly what training saw."""
    for start in range(0, len(ids), batch_size):
        images, ok = cache.get(ids[start : start + batch_size])
        if ok:
            if hide is not None and hide.enabled:
                images = hide_pixels(images, hide, cache.get_masks(ok) if hide.needs_masks else None)
            yield images, torch.tensor([labels[i] for i in ok], dtype=torch.long)
