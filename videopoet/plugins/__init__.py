"""Built-in modality plugins: tokenizers, text encoders, refiners (each a videopoet plugin)."""
