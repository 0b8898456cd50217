"""Training: tokenizer, token shards (``cdssm data prepare``) and the batch loader."""
