"""What voxgate keeps on disk. For now: the devices allowed to connect."""
