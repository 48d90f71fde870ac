-- entry: {"params": ["a"], "kind": "user"}
select host, usage_user from cpu where host = $1
-- entry: {"params": [], "kind": "catalog", "columns": [["cur", "text"], ["new", "text"]], "rows": [["on", "off"]]}

	                    SELECT
	                        current_setting('jit') AS cur,
	                        set_config('jit', 'off', false) AS new
-- entry: {"params": ["{16,20,23,25,701,1114,1184,1700,1043,19,26,18,1009,1022}"], "kind": "catalog", "columns": [["oid", "oid"], ["ns", "name"], ["name", "name"], ["kind", "char"], ["basetype", "oid"], ["elemtype", "oid"], ["elemdelim", "char"], ["range_subtype", "oid"], ["attrtypoids", "_oid"], ["attrnames", "_text"], ["depth", "int4"], ["basetype_name", "text"], ["elemtype_name", "text"], ["range_subtype_name", "text"]], "rows": [["701", "pg_catalog", "float8", "b", null, "0", null, null, null, null, "1", null, "-", null], ["25", "pg_catalog", "text", "b", null, "0", null, null, null, null, "1", null, "-", null], ["18", "pg_catalog", "char", "b", null, "0", null, null, null, null, "1", null, "-", null], ["1009", "pg_catalog", "_text", "b", null, "25", ",", null, null, null, "0", null, "text", null], ["25", "pg_catalog", "text", "b", null, "0", null, null, null, null, "0", null, "-", null], ["1184", "pg_catalog", "timestamptz", "b", null, "0", null, null, null, null, "0", null, "-", null], ["1700", "pg_catalog", "numeric", "b", null, "0", null, null, null, null, "0", null, "-", null], ["19", "pg_catalog", "name", "b", null, "18", null, null, null, null, "0", null, "\"char\"", null], ["20", "pg_catalog", "int8", "b", null, "0", null, null, null, null, "0", null, "-", null], ["23", "pg_catalog", "int4", "b", null, "0", null, null, null, null, "0", null, "-", null], ["1022", "pg_catalog", "_float8", "b", null, "701", ",", null, null, null, "0", null, "double precision", null], ["18", "pg_catalog", "char", "b", null, "0", null, null, null, null, "0", null, "-", null], ["26", "pg_catalog", "oid", "b", null, "0", null, null, null, null, "0", null, "-", null], ["1114", "pg_catalog", "timestamp", "b", null, "0", null, null, null, null, "0", null, "-", null], ["16", "pg_catalog", "bool", "b", null, "0", null, null, null, null, "0", null, "-", null], ["701", "pg_catalog", "float8", "b", null, "0", null, null, null, null, "0", null, "-", null], ["1043", "pg_catalog", "varchar", "b", null, "0", null, null, null, null, "0", null, "-", null]]}
WITH RECURSIVE typeinfo_tree(
	    oid, ns, name, kind, basetype, elemtype, elemdelim,
	    range_subtype, attrtypoids, attrnames, depth)
	AS (
	    SELECT
	        ti.oid, ti.ns, ti.name, ti.kind, ti.basetype,
	        ti.elemtype, ti.elemdelim, ti.range_subtype,
	        ti.attrtypoids, ti.attrnames, 0
	    FROM
	            (
	        SELECT
	            t.oid                           AS oid,
	            ns.nspname                      AS ns,
	            t.typname                       AS name,
	            t.typtype                       AS kind,
	            (CASE WHEN t.typtype = 'd' THEN
	                (WITH RECURSIVE typebases(oid, depth) AS (
	                    SELECT
	                        t2.typbasetype      AS oid,
	                        0                   AS depth
	                    FROM
	                        pg_type t2
	                    WHERE
	                        t2.oid = t.oid
	
	                    UNION ALL
	
	                    SELECT
	                        t2.typbasetype      AS oid,
	                        tb.depth + 1        AS depth
	                    FROM
	                        pg_type t2,
	                        typebases tb
	                    WHERE
	                       tb.oid = t2.oid
	                       AND t2.typbasetype != 0
	               ) SELECT oid FROM typebases ORDER BY depth DESC LIMIT 1)
	
	               ELSE NULL
	            END)                            AS basetype,
	            t.typelem                       AS elemtype,
	            elem_t.typdelim                 AS elemdelim,
	            COALESCE(
	                range_t.rngsubtype,
	                multirange_t.rngsubtype)    AS range_subtype,
	            (CASE WHEN t.typtype = 'c' THEN
	                (SELECT
	                    array_agg(ia.atttypid ORDER BY ia.attnum)
	                FROM
	                    pg_attribute ia
	                    INNER JOIN pg_class c
	                        ON (ia.attrelid = c.oid)
	                WHERE
	                    ia.attnum > 0 AND NOT ia.attisdropped
	                    AND c.reltype = t.oid)
	
	                ELSE NULL
	            END)                            AS attrtypoids,
	            (CASE WHEN t.typtype = 'c' THEN
	                (SELECT
	                    array_agg(ia.attname::text ORDER BY ia.attnum)
	                FROM
	                    pg_attribute ia
	                    INNER JOIN pg_class c
	                        ON (ia.attrelid = c.oid)
	                WHERE
	                    ia.attnum > 0 AND NOT ia.attisdropped
	                    AND c.reltype = t.oid)
	
	                ELSE NULL
	            END)                            AS attrnames
	        FROM
	            pg_catalog.pg_type AS t
	            INNER JOIN pg_catalog.pg_namespace ns ON (
	                ns.oid = t.typnamespace)
	            LEFT JOIN pg_type elem_t ON (
	                t.typlen = -1 AND
	                t.typelem != 0 AND
	                t.typelem = elem_t.oid
	            )
	            LEFT JOIN pg_range range_t ON (
	                t.oid = range_t.rngtypid
	            )
	            LEFT JOIN pg_range multirange_t ON (
	                t.oid = multirange_t.rngmultitypid
	            )
	    )
	 AS ti
	    WHERE
	        ti.oid = any($1::oid[])
	
	    UNION ALL
	
	    SELECT
	        ti.oid, ti.ns, ti.name, ti.kind, ti.basetype,
	        ti.elemtype, ti.elemdelim, ti.range_subtype,
	        ti.attrtypoids, ti.attrnames, tt.depth + 1
	    FROM
	            (
	        SELECT
	            t.oid                           AS oid,
	            ns.nspname                      AS ns,
	            t.typname                       AS name,
	            t.typtype                       AS kind,
	            (CASE WHEN t.typtype = 'd' THEN
	                (WITH RECURSIVE typebases(oid, depth) AS (
	                    SELECT
	                        t2.typbasetype      AS oid,
	                        0                   AS depth
	                    FROM
	                        pg_type t2
	                    WHERE
	                        t2.oid = t.oid
	
	                    UNION ALL
	
	                    SELECT
	                        t2.typbasetype      AS oid,
	                        tb.depth + 1        AS depth
	                    FROM
	                        pg_type t2,
	                        typebases tb
	                    WHERE
	                       tb.oid = t2.oid
	                       AND t2.typbasetype != 0
	               ) SELECT oid FROM typebases ORDER BY depth DESC LIMIT 1)
	
	               ELSE NULL
	            END)                            AS basetype,
	            t.typelem                       AS elemtype,
	            elem_t.typdelim                 AS elemdelim,
	            COALESCE(
	                range_t.rngsubtype,
	                multirange_t.rngsubtype)    AS range_subtype,
	            (CASE WHEN t.typtype = 'c' THEN
	                (SELECT
	                    array_agg(ia.atttypid ORDER BY ia.attnum)
	                FROM
	                    pg_attribute ia
	                    INNER JOIN pg_class c
	                        ON (ia.attrelid = c.oid)
	                WHERE
	                    ia.attnum > 0 AND NOT ia.attisdropped
	                    AND c.reltype = t.oid)
	
	                ELSE NULL
	            END)                            AS attrtypoids,
	            (CASE WHEN t.typtype = 'c' THEN
	                (SELECT
	                    array_agg(ia.attname::text ORDER BY ia.attnum)
	                FROM
	                    pg_attribute ia
	                    INNER JOIN pg_class c
	                        ON (ia.attrelid = c.oid)
	                WHERE
	                    ia.attnum > 0 AND NOT ia.attisdropped
	                    AND c.reltype = t.oid)
	
	                ELSE NULL
	            END)                            AS attrnames
	        FROM
	            pg_catalog.pg_type AS t
	            INNER JOIN pg_catalog.pg_namespace ns ON (
	                ns.oid = t.typnamespace)
	            LEFT JOIN pg_type elem_t ON (
	                t.typlen = -1 AND
	                t.typelem != 0 AND
	                t.typelem = elem_t.oid
	            )
	            LEFT JOIN pg_range range_t ON (
	                t.oid = range_t.rngtypid
	            )
	            LEFT JOIN pg_range multirange_t ON (
	                t.oid = multirange_t.rngmultitypid
	            )
	    )
	 ti,
	        typeinfo_tree tt
	    WHERE
	        (tt.elemtype IS NOT NULL AND ti.oid = tt.elemtype)
	        OR (tt.attrtypoids IS NOT NULL AND ti.oid = any(tt.attrtypoids))
	        OR (tt.range_subtype IS NOT NULL AND ti.oid = tt.range_subtype)
	        OR (tt.basetype IS NOT NULL AND ti.oid = tt.basetype)
	)
	
	SELECT DISTINCT
	    *,
	    basetype::regtype::text AS basetype_name,
	    elemtype::regtype::text AS elemtype_name,
	    range_subtype::regtype::text AS range_subtype_name
	FROM
	    typeinfo_tree
	ORDER BY
	    depth DESC
-- entry: {"params": ["on"], "kind": "catalog", "columns": [["set_config", "text"]], "rows": [["on"]]}

	                SELECT
	                    set_config('jit', $1, false)
-- entry: {"params": ["cpu", "public"], "kind": "catalog", "columns": [["oid", "oid"], ["elemtype", "oid"], ["kind", "char"]], "rows": [["{{rowtype:cpu}}", "0", "c"]]}
SELECT
	    t.oid,
	    t.typelem     AS elemtype,
	    t.typtype     AS kind
	FROM
	    pg_catalog.pg_type AS t
	    INNER JOIN pg_catalog.pg_namespace ns ON (ns.oid = t.typnamespace)
	WHERE
	    t.typname = $1 AND ns.nspname = $2
