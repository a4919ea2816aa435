"""`make integ`: one bounded acceptance run of the three flows on a real AWS account, and a leak sweep.

Never part of CI. `python -m acceptance --yes` (with `DOGBREED_INTEG_S3_URI` and credentials)
trains a SageMaker job on generated images (spot), deploys its model as a serverless endpoint
behind the Lambda and its URL, sends one JPEG through the URL, tears the deploy down, launches
one small EC2 instance with `debug=fast` that terminates itself, waits for its run in S3, and
ends with `ami down`. Every resource carries the run's tag `dogbreed-acceptance=<run id>` and its
names start with `dbacc-<run id>`; the final sweep lists anything left under either and fails
if one is. `--endpoint-url` points it at an emulator (the test suite runs it against moto).
"""
