"""staleness"""
