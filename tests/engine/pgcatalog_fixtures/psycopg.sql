-- entry: {"params": [], "kind": "user"}
BEGIN
-- entry: {"params": ["hstore"], "kind": "catalog", "columns": [["name", "name"], ["oid", "oid"], ["array_oid", "oid"], ["regtype", "text"], ["delimiter", "char"]], "rows": []}
SELECT
	    typname AS name, oid, typarray AS array_oid,
	    oid::regtype::text AS regtype, typdelim AS delimiter
	FROM pg_type t
	WHERE t.oid = to_regtype($1)
	ORDER BY t.oid
-- entry: {"params": [], "kind": "user"}
COMMIT
-- entry: {"params": ["text"], "kind": "catalog", "columns": [["name", "name"], ["oid", "oid"], ["array_oid", "oid"], ["regtype", "text"], ["delimiter", "char"]], "rows": [["text", "25", "1009", "text", ","]]}
SELECT
	    typname AS name, oid, typarray AS array_oid,
	    oid::regtype::text AS regtype, typdelim AS delimiter
	FROM pg_type t
	WHERE t.oid = to_regtype($1)
	ORDER BY t.oid
-- entry: {"params": ["a"], "kind": "user"}
select host from cpu where host = $1
