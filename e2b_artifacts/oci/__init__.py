"""OCI / Docker images without a daemon: references, registry pulls, a blob cache, layer flattening.

``image.py`` puts the pieces together for ``build --from-image``.
"""
