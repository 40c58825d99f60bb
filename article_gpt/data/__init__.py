"""Text in: the offline GPT-2 tokenizer, corpora, token cache and training windows."""
