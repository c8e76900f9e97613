"""Evaluation suite: text accuracy (OCR), LongText-Bench metric, compliance judge, FID, HTML report.

One module per idea:
  textmetrics  exact match / word recall / CER, bootstrap intervals, breakdowns (pure Python, no OCR)
  longtext     LongText-Bench scoring rule and bench-file loading
  images       reading an image directory or dataset for evaluation (skips and counts unreadable images)
  text         `xomni eval text`: OCR images (or a model's samples) and score them against targets
  fid          Fréchet distance, EfficientNet-Lite0 / Inception feature extractors, sanity table
  inception    InceptionV3 written in plain torch (torchvision-compatible state dicts, no torchvision import)
  judge        compliance judge network: attribute schema, model, training loss, save/load
  compliance   scoring generated images against their prompt's attributes; judge accuracy and swap rejection
  report       `xomni eval all`: self-contained HTML report + metrics.json
  ocrbench     `xomni bench ocr`: images/s for Tesseract and RapidOCR
See docs/EVAL.md.
"""
