-- entry: {"params": [], "kind": "catalog", "columns": [["oid", "oid"], ["nspname", "name"], ["relname", "name"]], "rows": [["{{oid:mem}}", "public", "mem"]]}
SELECT c.oid,
	  n.nspname,
	  c.relname
	FROM pg_catalog.pg_class c
	     LEFT JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
	WHERE c.relname OPERATOR(pg_catalog.~) '^(mem)$' COLLATE pg_catalog.default
	  AND pg_catalog.pg_table_is_visible(c.oid)
	ORDER BY 2, 3;
-- entry: {"params": [], "kind": "catalog", "columns": [["relchecks", "int2"], ["relkind", "char"], ["relhasindex", "bool"], ["relhasrules", "bool"], ["relhastriggers", "bool"], ["relrowsecurity", "bool"], ["relforcerowsecurity", "bool"], ["relhasoids", "bool"], ["relispartition", "bool"], ["?column?", "text"], ["reltablespace", "oid"], ["reloftype", "text"], ["relpersistence", "char"], ["relreplident", "char"], ["amname", "name"]], "rows": [["0", "r", "f", "f", "f", "f", "f", "f", "f", "", "0", "", "p", "d", "heap"]]}
SELECT c.relchecks, c.relkind, c.relhasindex, c.relhasrules, c.relhastriggers, c.relrowsecurity, c.relforcerowsecurity, false AS relhasoids, c.relispartition, '', c.reltablespace, CASE WHEN c.reloftype = 0 THEN '' ELSE c.reloftype::pg_catalog.regtype::pg_catalog.text END, c.relpersistence, c.relreplident, am.amname
	FROM pg_catalog.pg_class c
	 LEFT JOIN pg_catalog.pg_class tc ON (c.reltoastrelid = tc.oid)
	LEFT JOIN pg_catalog.pg_am am ON (c.relam = am.oid)
	WHERE c.oid = '{{oid:mem}}';
-- entry: {"params": [], "kind": "catalog", "columns": [["attname", "name"], ["format_type", "text"], ["pg_get_expr", "text"], ["attnotnull", "bool"], ["attcollation", "name"], ["attidentity", "char"], ["attgenerated", "char"]], "rows": [["time", "timestamp without time zone", null, "f", null, "", ""], ["host", "text", null, "f", null, "", ""], ["used", "double precision", null, "f", null, "", ""]]}
SELECT a.attname,
	  pg_catalog.format_type(a.atttypid, a.atttypmod),
	  (SELECT pg_catalog.pg_get_expr(d.adbin, d.adrelid, true)
	   FROM pg_catalog.pg_attrdef d
	   WHERE d.adrelid = a.attrelid AND d.adnum = a.attnum AND a.atthasdef),
	  a.attnotnull,
	  (SELECT c.collname FROM pg_catalog.pg_collation c, pg_catalog.pg_type t
	   WHERE c.oid = a.attcollation AND t.oid = a.atttypid AND a.attcollation <> t.typcollation) AS attcollation,
	  a.attidentity,
	  a.attgenerated
	FROM pg_catalog.pg_attribute a
	WHERE a.attrelid = '{{oid:mem}}' AND a.attnum > 0 AND NOT a.attisdropped
	ORDER BY a.attnum;
-- entry: {"params": [], "kind": "catalog", "columns": [["polname", "name"], ["polpermissive", "bool"], ["array_to_string", "text"], ["pg_get_expr", "text"], ["pg_get_expr", "text"], ["cmd", "text"]], "rows": []}
SELECT pol.polname, pol.polpermissive,
	  CASE WHEN pol.polroles = '{0}' THEN NULL ELSE pg_catalog.array_to_string(array(select rolname from pg_catalog.pg_roles where oid = any (pol.polroles) order by 1),',') END,
	  pg_catalog.pg_get_expr(pol.polqual, pol.polrelid),
	  pg_catalog.pg_get_expr(pol.polwithcheck, pol.polrelid),
	  CASE pol.polcmd
	    WHEN 'r' THEN 'SELECT'
	    WHEN 'a' THEN 'INSERT'
	    WHEN 'w' THEN 'UPDATE'
	    WHEN 'd' THEN 'DELETE'
	    END AS cmd
	FROM pg_catalog.pg_policy pol
	WHERE pol.polrelid = '{{oid:mem}}' ORDER BY 1;
-- entry: {"params": [], "kind": "catalog", "columns": [["oid", "oid"], ["stxrelid", "regclass"], ["nsp", "text"], ["stxname", "name"], ["columns", "text"], ["ndist_enabled", "bool"], ["deps_enabled", "bool"], ["mcv_enabled", "bool"], ["stxstattarget", "int4"]], "rows": []}
SELECT oid, stxrelid::pg_catalog.regclass, stxnamespace::pg_catalog.regnamespace::pg_catalog.text AS nsp, stxname,
	pg_catalog.pg_get_statisticsobjdef_columns(oid) AS columns,
	  'd' = any(stxkind) AS ndist_enabled,
	  'f' = any(stxkind) AS deps_enabled,
	  'm' = any(stxkind) AS mcv_enabled,
	stxstattarget
	FROM pg_catalog.pg_statistic_ext
	WHERE stxrelid = '{{oid:mem}}'
	ORDER BY nsp, stxname;
-- entry: {"params": [], "kind": "catalog", "columns": [["pubname", "name"], ["?column?", "text"], ["?column?", "text"]], "rows": []}
SELECT pubname
	     , NULL
	     , NULL
	FROM pg_catalog.pg_publication p
	     JOIN pg_catalog.pg_publication_namespace pn ON p.oid = pn.pnpubid
	     JOIN pg_catalog.pg_class pc ON pc.relnamespace = pn.pnnspid
	WHERE pc.oid ='{{oid:mem}}' and pg_catalog.pg_relation_is_publishable('{{oid:mem}}')
	UNION
	SELECT pubname
	     , pg_get_expr(pr.prqual, c.oid)
	     , (CASE WHEN pr.prattrs IS NOT NULL THEN
	         (SELECT string_agg(attname, ', ')
	           FROM pg_catalog.generate_series(0, pg_catalog.array_upper(pr.prattrs::pg_catalog.int2[], 1)) s,
	                pg_catalog.pg_attribute
	          WHERE attrelid = pr.prrelid AND attnum = prattrs[s])
	        ELSE NULL END) FROM pg_catalog.pg_publication p
	     JOIN pg_catalog.pg_publication_rel pr ON p.oid = pr.prpubid
	     JOIN pg_catalog.pg_class c ON c.oid = pr.prrelid
	WHERE pr.prrelid = '{{oid:mem}}'
	UNION
	SELECT pubname
	     , NULL
	     , NULL
	FROM pg_catalog.pg_publication p
	WHERE p.puballtables AND pg_catalog.pg_relation_is_publishable('{{oid:mem}}')
	ORDER BY 1;
-- entry: {"params": [], "kind": "catalog", "columns": [["oid", "regclass"]], "rows": []}
SELECT c.oid::pg_catalog.regclass
	FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i
	WHERE c.oid = i.inhparent AND i.inhrelid = '{{oid:mem}}'
	  AND c.relkind != 'p' AND c.relkind != 'I'
	ORDER BY inhseqno;
-- entry: {"params": [], "kind": "catalog", "columns": [["oid", "regclass"], ["relkind", "char"], ["inhdetachpending", "bool"], ["pg_get_expr", "text"]], "rows": []}
SELECT c.oid::pg_catalog.regclass, c.relkind, inhdetachpending, pg_catalog.pg_get_expr(c.relpartbound, c.oid)
	FROM pg_catalog.pg_class c, pg_catalog.pg_inherits i
	WHERE c.oid = i.inhrelid AND i.inhparent = '{{oid:mem}}'
	ORDER BY pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', c.oid::pg_catalog.regclass::pg_catalog.text;
