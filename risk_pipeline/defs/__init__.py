import warnings

import dagster as dg

# Beta APIs used on purpose: BackfillPolicy.single_run() (a backfill of a range is one run) and code
# references (each asset links to its source in the UI). Their "in beta" notice is not a problem of a
# run, so it is not printed for every asset.
warnings.filterwarnings("ignore", category=dg.BetaWarning)
