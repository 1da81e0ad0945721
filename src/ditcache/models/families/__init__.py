"""One module per model family: each declares its extractor(s) over :mod:`ditcache.models._diffusers`.

A family module is imported by the core on the first lookup of one of its classes (``ditcache.models.MODEL_TABLE``)
and registers its extractors as it is imported. Family modules never import each other (checked by import-linter).
"""
