"""The Transformer sequential recommender: data, network, training, evaluation, registry, inference."""
