"""Vocabulary pruning (`vocab_pruning`): the tokenizer and the embedding rows cut to the tokens
the task's text uses. The pruned model is an ordinary one with a smaller `vocab_size`, so there
is no storage layer and no rebuild."""
