"""Synthetic text-in-image data (real fonts, caption grammar, exact metadata), dataset storage and import.

Entry points: `xomni.data.io.open_dataset`, `xomni.data.synth.synth`, `xomni.data.caption.parse_caption`,
`xomni.data.text_tokenizer.load_text_tokenizer`. See docs/INTERNALS.md for the sample schema.
"""
