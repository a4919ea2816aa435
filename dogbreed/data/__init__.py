"""The dataset on disk: its folders, the check of every file, the Dataset, download, generation, transforms.

Local files only: nothing here talks to S3 or AWS (`dogbreed.storage.mirror` brings an S3 prefix down first).
"""
