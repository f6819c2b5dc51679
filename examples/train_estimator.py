"""Train the defocus estimator: `lbdvd train` (see lbdvd_jax/train_estimator_app.py).

    python examples/train_estimator.py --out runs/estimator --fields ../shared/data/real/bbbc006/infocus
"""

import sys

from lbdvd_jax.train_estimator_app import main

if __name__ == "__main__":
    sys.exit(main())
