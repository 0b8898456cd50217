"""Training: data (tokenizer, shards, loader), optimizer and schedule, the training loop."""
