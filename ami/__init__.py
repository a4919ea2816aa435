"""EC2 side of dogbreed: launch a Deep Learning AMI instance safely, bootstrap it, price it, tear it down."""
