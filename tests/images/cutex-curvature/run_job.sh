#!/bin/sh
# CMD of the CuTEx stand-in image, following caesar-rest's job-image contract: the job comes in the environment
# (JOB_OPTIONS: the app's "--opt=value" arguments as one string; INPUTFILE; JOB_DIR; JOB_OUTDIR) and the products
# go to JOB_OUTDIR under caesar-rest's names (catalog-*, catalog_fitcomp-*, plot_*).
set -eu
: "${INPUTFILE:?INPUTFILE (the image to search) is not set}"
JOB_DIR=${JOB_DIR:-/job}
JOB_OUTDIR=${JOB_OUTDIR:-$JOB_DIR}
mkdir -p "$JOB_OUTDIR"
echo "run_job.sh: CuTEx stand-in on $INPUTFILE, options: ${JOB_OPTIONS:-}"
# JOB_OPTIONS is split into words on purpose: it is caesar-rest's "--opt=value ..." string
# shellcheck disable=SC2086
exec python3 /opt/cutex-curvature/cutex_find.py --run --no-logredir --jobdir="$JOB_DIR" --outdir="$JOB_OUTDIR" \
    --inputfile="$INPUTFILE" ${JOB_OPTIONS:-}
