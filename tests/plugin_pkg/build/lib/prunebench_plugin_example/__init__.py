"""An example prunebench plugin; each module registers one thing when imported."""
