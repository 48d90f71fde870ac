"""rusts.codecs"""
