"""Metrics: how images and strings are scored, below the model components (which use them in their trainers'
evaluations) and above the data layer (whose presets fix the OCR crop and whose renderer draws reference images).

One module per idea:
  textmetrics  exact match / word recall / CER, bootstrap intervals, breakdowns (pure Python, no OCR)
  ocr          Tesseract and RapidOCR with one preprocessing; the fixed crop a preset's OCR reads
  images       reading an image directory or dataset for evaluation (skips and counts unreadable images)
  text         text accuracy of images: OCR against target strings, with intervals and breakdowns
  longtext     LongText-Bench scoring rule and its bench files
  fid          Fréchet distance, EfficientNet-Lite0 / Inception feature extractors, sanity table
  inception    InceptionV3 written in plain torch (torchvision-compatible state dicts, no torchvision import)
  judge        compliance judge network: attribute schema, model, training loss, save/load
  judge_train  training the judge on the shared loop (`xomni train judge`)
  compliance   scoring images against their prompt's attributes; judge accuracy and swap rejection
  ocrbench     `xomni bench ocr`: images/s for Tesseract and RapidOCR
The harness that runs a model and reports (xomni.eval) sits above the Pipeline. See docs/EVAL.md.
"""
