-- entry: {"params": [], "kind": "user"}
BEGIN
-- entry: {"params": [], "kind": "user"}
select host from cpu where host = 'a'
