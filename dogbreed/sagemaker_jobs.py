"""The jobs command's old path, kept for one release: `python -m dogbreed.sagemaker_jobs` runs
`python -m dogbreed.sagemaker.jobs`, after a note on stderr.

The launcher of 0.1 printed the old path in its log lines, so users have typed it. Remove in 0.3.
"""

import sys

from dogbreed.sagemaker.jobs import main

if __name__ == "__main__":
    print("note: python -m dogbreed.sagemaker_jobs is now python -m dogbreed.sagemaker.jobs", file=sys.stderr)
    sys.exit(main())
