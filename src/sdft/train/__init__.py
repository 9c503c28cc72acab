"""LoRA fine-tuning with the loss on response tokens only."""
