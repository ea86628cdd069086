"""Learned interatomic potentials: SchNet and an e3x equivariant network.

Modules: ``graph`` (edges from neighbor lists, padding masks),
``schnet`` and ``equivariant`` (the networks), ``architectures`` (the
registry and the energy head shared by both), ``model_io`` (model
directories), ``potential`` (the engine's :class:`Potential`), ``data``,
``training``, ``evaluate``, ``schnetpack_format`` and ``import_schnetpack``
(importing schnetpack SchNet models) and ``cli``.
"""
