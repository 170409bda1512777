"""Start the cxr app: `python app.py [--data DIR] [--download]` (Hugging Face Spaces runs this file).

The dataset is a server setting: --data or CXR_DATA, else data/COVID-19_Radiography_Dataset, else a synthetic set
drawn on first start. --download (or CXR_DOWNLOAD=1) fetches the real database first where the network allows.
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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    from demo.context import AppContext, resolve_settings
    from demo.ui import build_app, launch_kwargs

    try:
        ctx = AppContext(resolve_settings(args.data, args.download))
        demo = build_app(ctx)
    except ValueError as e:  # e.g. --data pointing at a folder without the class folders
        sys.exit(f"error: {e}")
    logging.getLogger("app").info("built the app in %.1f s (data: %s)", time.perf_counter() - T0, ctx.settings.data_dir)
    demo.launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
        server_port=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
        **launch_kwargs(),
    )


if __name__ == "__main__":
    main()
