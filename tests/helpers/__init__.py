"""What several test modules share: the shrunk config, images, ports, trained runs."""
