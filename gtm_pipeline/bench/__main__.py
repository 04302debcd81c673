"""``python -m gtm_pipeline.bench <job.json>``: one measurement of the benchmark, in its own process
(`gtm_pipeline.bench.runs`)."""

import sys

from gtm_pipeline.bench.runs import main

sys.exit(main(sys.argv[1:]))
