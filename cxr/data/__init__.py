"""Data: from files on disk to the tensors a model trains on.

- `images`: read any X-ray file (PNG, JPEG, 16-bit) safely into one grey channel, `dicom` the DICOM files, `pixels`
  the limits and windowing both share; `decode_budget` caps the memory that decodes share.
- `transforms`: the one place for resizing, augmentation, normalisation and `denormalize` (training, the Data
  tab's browser and inference all call it).
- `lungs`: lung masks and the "hide the lungs" box of the shortcut lesson.
- `index`: the class-folder index and the patient-grouped split (`split_for` gives a model's split).
- `cache`: decoded images kept in memory, and the batches drawn from them.
- `synthetic`: a small chest-radiograph-like set drawn offline; `download`: the Kaggle database.
"""
