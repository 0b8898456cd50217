"""``python -m cdssm`` runs the ``cdssm`` command (so ``torchrun -m cdssm ...`` works too)."""

from .cli import main

raise SystemExit(main())
