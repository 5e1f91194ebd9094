"""Model file formats: GGUF (more to come: HF safetensors, BitNet checkpoints)."""
