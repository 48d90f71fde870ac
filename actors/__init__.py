"""rusts.actors"""
