"""The Gradio face of cxr: `ui.build_app` composes one module per tab (data_tab, train_tab, classify_tab) over an
`AppContext` (context.py) that owns the dataset, loaded models and the single training job (job.py)."""
