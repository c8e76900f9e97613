"""Evaluation harness: runs a Pipeline (or reads its images) and reports, with the scores of xomni.metrics.

  text        `xomni eval text --model`: a model's samples of target strings (its own prompt template)
  longtext    `xomni eval longtext`: LongText-Bench on an image directory or a model's samples
  captioning  `xomni eval caption`: the generator's own weights caption ground-truth renders
  report      `xomni eval all`: self-contained HTML report + metrics.json
  cli         the `xomni eval ...`, `xomni train judge` and `xomni bench ocr` commands
See docs/EVAL.md.
"""
