"""Training: tokenizer, token shards (``cdssm data prepare``) and the batch loader; optimizer
and schedule; the training loop (``cdssm train``)."""
