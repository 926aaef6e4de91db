"""Labeling a user's own images: ``pal label`` picks the next batch from a real unlabeled pool.

The pool is a manifest (``manifest:PATH``, a CSV of ``path,label,split``); a project folder
holds the config, an append-only ledger of labels and one folder per round's batch. One concept
per module:

* :mod:`pal.labeling.project`: the project folder, its ledger, its lock, atomic writes.
* :mod:`pal.labeling.setup`: ``init``, the config from a sweep, a run or a YAML file.
* :mod:`pal.labeling.rounds`: ``next``, one round: train on the ledger, choose, write the batch.
* :mod:`pal.labeling.pool`: the manifest's images with the ledger laid over them.
* :mod:`pal.labeling.predict`: each round's saved task network and ``predict``.
* :mod:`pal.labeling.api`: the same from Python (:func:`open`, :func:`init`).
* :mod:`pal.labeling.studio`: Label Studio's task format and labeling config.
* :mod:`pal.labeling.imports`: reading annotation files (Label Studio JSON, JSON-MIN, CSV).
* :mod:`pal.labeling.importer`: ``import``, annotations into the ledger, atomic and idempotent.
* :mod:`pal.labeling.live`: ``push`` and ``pull``, a Label Studio server through its SDK.
* :mod:`pal.labeling.status`: ``status`` (stopping signal, curve) and ``export``.
* :mod:`pal.labeling.demo`: the digits demo pool and its simulated annotator.
* :mod:`pal.labeling.cli`: the ``pal label`` commands.
"""


def __getattr__(name: str):
    # the Python API, imported on first use: ``pal label --help`` needs none of it
    if name in ("open", "init", "LabelingProject"):
        from pal.labeling import api

        return getattr(api, name)
    raise AttributeError(f"module 'pal.labeling' has no attribute {name!r}")
