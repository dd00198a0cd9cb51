"""A lab's own additions to inat-lightning, used by ``_target_`` from its own ``conf/``."""
