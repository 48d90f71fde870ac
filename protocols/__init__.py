"""rusts.protocols"""
