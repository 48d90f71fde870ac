-- entry: {"params": ["a"], "kind": "user"}
select host from cpu where host = $1
