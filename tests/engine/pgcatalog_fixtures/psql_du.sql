-- entry: {"params": [], "kind": "catalog", "columns": [["rolname", "name"], ["rolsuper", "bool"], ["rolinherit", "bool"], ["rolcreaterole", "bool"], ["rolcreatedb", "bool"], ["rolcanlogin", "bool"], ["rolconnlimit", "int4"], ["rolvaliduntil", "timestamptz"], ["memberof", "_name"], ["rolreplication", "bool"], ["rolbypassrls", "bool"]], "rows": [["rusts", "t", "t", "t", "t", "t", "-1", null, "{}", "t", "t"]]}
SELECT r.rolname, r.rolsuper, r.rolinherit,
	  r.rolcreaterole, r.rolcreatedb, r.rolcanlogin,
	  r.rolconnlimit, r.rolvaliduntil,
	  ARRAY(SELECT b.rolname
	        FROM pg_catalog.pg_auth_members m
	        JOIN pg_catalog.pg_roles b ON (m.roleid = b.oid)
	        WHERE m.member = r.oid) as memberof
	, r.rolreplication
	, r.rolbypassrls
	FROM pg_catalog.pg_roles r
	WHERE r.rolname !~ '^pg_'
	ORDER BY 1;
