"""Start the cxr app: `python app.py [--data DIR] [--download] [--teacher-key KEY] [--no-starter]` (Hugging Face
Spaces runs this file).

The dataset is a server setting: --data or CXR_DATA, else data/COVID-19_Radiography_Dataset, else a synthetic set
drawn on first start. --download (or CXR_DOWNLOAD=1) fetches the real database first where the network allows.
--teacher-key (or CXR_TEACHER_KEY, e.g. a Space secret) keeps Start, Stop and adding models to the teacher. With no
model saved yet, a starter run of the machine's preset begins at once (--no-starter or CXR_STARTER=0 turns it off).
--max-checkpoint-mb (CXR_MAX_CHECKPOINT_MB) caps the checkpoints folder; the oldest runs go first.
GRADIO_SERVER_NAME and GRADIO_SERVER_PORT choose the address (default 127.0.0.1:7860; 0.0.0.0 on a Space).
"""

import argparse
import logging
import os
import sys
import time

T0 = time.perf_counter()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="dataset folder (Kaggle layout or <class>/*.png)")
    parser.add_argument("--download", action="store_true", help="fetch the real database from Kaggle on first start")
    parser.add_argument("--teacher-key", help="only who knows this key may start, stop or add models (or CXR_TEACHER_KEY)")
    parser.add_argument("--no-starter", action="store_true", help="do not train a starter model when none exists")
    parser.add_argument("--max-checkpoint-mb", type=float, help="cap on the checkpoints folder (default 2000)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from cxr.data.decode_budget import limit_arenas

    limit_arenas()  # before the server's threads start: they share two heaps instead of each keeping its own

    from demo.context import AppContext
    from demo.settings import resolve_settings
    from demo.ui import build_app, launch_kwargs

    try:
        settings = resolve_settings(args.data, args.download, teacher_key=args.teacher_key,
                                    starter=False if args.no_starter else None, max_checkpoint_mb=args.max_checkpoint_mb)
        ctx = AppContext(settings)
        ctx.start_up()
        demo = build_app(ctx)
        ctx.start_starter()
    except ValueError as e:  # e.g. --data pointing at a folder without the class folders
        sys.exit(f"error: {e}")
    logging.getLogger("app").info("built the app in %.1f s (data: %s)", time.perf_counter() - T0, ctx.settings.data_dir)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_kwargs(ctx),
    )


if __name__ == "__main__":
    main()
