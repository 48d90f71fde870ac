"""rusts.protocols.pgwire"""
