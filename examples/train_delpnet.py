"""The paper's DelpNet training: `lbdvd train --paper-delpnet` (see lbdvd_jax/train_delpnet_app.py).

    python examples/train_delpnet.py --out runs/main --data ../shared/data/real/bbbc006/infocus
"""

import sys

from lbdvd_jax.train_delpnet_app import main

if __name__ == "__main__":
    sys.exit(main())
