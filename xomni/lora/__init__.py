"""LoRA adapters (peft) for the unified AR model: train on the shared loop, load without merging, merge to bake in.

    xomni train lora --model DIR --data D --out O          # O/final: adapter_model.safetensors + adapter_config.json
    xomni generate --lora O "..."                           # also caption, eval text, serve
    xomni lora merge --model DIR --lora O --out DIR2        # a full pipeline with the adapter baked in

See docs/LORA.md (the "font pack": a font the bundled model never saw).
"""
