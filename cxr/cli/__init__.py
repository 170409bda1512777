"""The command line, `python -m cxr COMMAND`: `main` dispatches and maps bad input to exit code 2; `train` holds the
train command (its flags made from `TrainConfig`)."""
