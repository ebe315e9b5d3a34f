"""The character-level GRU: corpus, vocabulary, network, training, evaluation and sampling."""
