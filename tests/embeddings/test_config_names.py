"""The config's list of compression method names (checked without torch) is the registry's."""

from __future__ import annotations

from embeddings.compression import known_methods
from embeddings.config import METHOD_NAMES, EmbeddingsConfig


def test_config_method_names_are_the_registry():
    assert sorted(METHOD_NAMES) == known_methods()
    assert EmbeddingsConfig(methods=list(METHOD_NAMES)).methods == list(METHOD_NAMES)
