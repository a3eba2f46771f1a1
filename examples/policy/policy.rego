# The default policy of Coupon Authority, model v1 (see docs/policy.md).
#
# Evaluated once per issue or attenuate request; the entrypoint is data.coupon.decision:
#
#   {"allow": bool, "reason": string, "max_ttl": int, "bindings": [string]}
#
# Data-driven: data.grants lists what callers may ask for and data.defaults fills in what a
# grant leaves out. Default deny: a request is allowed only when one grant matches it in every
# dimension. The TTL never causes a denial: it is capped at the grant's max_ttl.
#
# Resource coverage is implemented here, in Rego, so that the policy is self-contained; it
# follows coupon.token.ResourcePattern.covers exactly (a property test checks the two agree).
package coupon

import rego.v1

# --- data ------------------------------------------------------------------------------------

grants := data.grants if is_array(data.grants) else := []

default_max_ttl := data.defaults.max_ttl if is_number(data.defaults.max_ttl) else := 300

default_bindings := data.defaults.bindings if is_array(data.defaults.bindings) else := ["jkt"]

default_max_depth := data.defaults.max_depth if is_number(data.defaults.max_depth) else := 4

binding_kinds := {"jkt", "x5t#S256"}

grant_max_ttl(g) := object.get(g, "max_ttl", default_max_ttl)

grant_bindings(g) := object.get(g, "bindings", default_bindings)

grant_max_depth(g) := object.get(g, "max_depth", default_max_depth)

# --- resource patterns (coupon/token/_scope.py) ----------------------------------------------

# One leading and one trailing "/" are dropped, as ResourcePattern.parse does.
strip_slashes(p) := trim_suffix(trim_prefix(p, "/"), "/")

# Whether every resource that pattern `theirs` matches is also matched by pattern `mine`:
# "*" stands for exactly one segment, a final "**" for zero or more trailing segments.
covers(mine, theirs) if covers_stripped(strip_slashes(mine), strip_slashes(theirs))

# Fast paths first (rego-cpp charges a few microseconds per built-in call): identical text,
# and a literal prefix followed by "/**". Everything else splits into segments.
covers_stripped(m, t) if m == t

covers_stripped("**", _)

covers_stripped(m, t) if {
	endswith(m, "/**")
	prefix := trim_suffix(m, "/**")
	not contains(prefix, "*")
	startswith(concat("", [t, "/"]), concat("", [prefix, "/"]))
}

covers_stripped(m, t) if {
	m != "**"
	contains(trim_suffix(m, "/**"), "*")
	covers_segments(split(m, "/"), split(t, "/"))
}

segment_covers("*", _)

segment_covers(p, q) if p == q

open_ended(segs) if segs[count(segs) - 1] == "**"

# The fewest segments a resource matched by the pattern can have. A resource has at least
# one segment, so "**" alone matches one or more.
shortest(segs) := max([count(segs) - 1, 1]) if open_ended(segs)

shortest(segs) := count(segs) if not open_ended(segs)

# Past the fixed part of `t` its segments are arbitrary; t[i] is then "**" itself, which only
# "*" covers.
covers_segments(m, t) if {
	open_ended(m)
	n := count(m) - 1
	shortest(t) >= n
	every i, p in array.slice(m, 0, n) {
		segment_covers(p, t[i])
	}
}

covers_segments(m, t) if {
	not open_ended(m)
	count(m) == count(t)
	not open_ended(t)
	every i, p in m {
		segment_covers(p, t[i])
	}
}

# --- purposes: "billing" covers "billing" and "billing.refund", never "billingx" -------------

purpose_covers("*", _)

purpose_covers(granted, requested) if granted == requested

purpose_covers(granted, requested) if startswith(requested, concat("", [granted, "."]))

# --- one check per dimension -----------------------------------------------------------------

request := input.request

# "*" in a grant's list matches any value.
any_of(values, _) if "*" in values

any_of(values, x) if x in values

# "issue" for a root coupon, "attenuate" for a sub-coupon (the request has a parent).
request_kind := "attenuate" if request.parent != null else := "issue"

caller_ok(g) if {
	kind_ok(g)
	any_of(g.callers, input.caller.id)
	roles_ok(g)
}

# A grant may be limited to root coupons or to sub-coupons; by default it serves both.
kind_ok(g) if not "requests" in object.keys(g)

kind_ok(g) if request_kind in g.requests

roles_ok(g) if not "roles" in object.keys(g)

roles_ok(g) if {
	some role in g.roles
	role in input.caller.roles
}

tenant_ok(g) if any_of(g.tenants, request.tenant)

subject_ok(g) if any_of(g.subjects, request.subject)

audience_ok(g) if {
	every aud in request.audience {
		any_of(g.audiences, aud)
	}
}

resource_ok(g) if {
	some pattern in g.resources
	covers(pattern, request.resource)
}

actions_ok(g) if {
	every action in request.actions {
		any_of(g.actions, action)
	}
}

purpose_ok(g) if {
	some granted in g.purposes
	purpose_covers(granted, request.purpose)
}

depth_ok(_) if request.parent == null

depth_ok(g) if {
	max_depth := grant_max_depth(g)
	is_number(max_depth)
	request.parent.depth + 1 <= max_depth
}

binding_ok(g) if request.binding in grant_bindings(g)

# A caller bound to a tenant acts for that tenant only, whatever the grants say.
caller_tenant_ok if input.caller.tenant == null

caller_tenant_ok if input.caller.tenant == request.tenant

# --- matching: the grants left after each dimension, cheapest checks first -------------------
#
# Each stage narrows the previous one. The stages serve both the decision and the deny reason
# (the first empty stage names the dimension), so no check runs twice. Comprehensions, not
# partial set rules: rego-cpp evaluates them about twice as fast.

left_caller := {i |
	caller_tenant_ok
	some i
	g := grants[i]
	caller_ok(g)
}

left_tenant := {i |
	some i in left_caller
	tenant_ok(grants[i])
}

left_subject := {i |
	some i in left_tenant
	subject_ok(grants[i])
}

left_audience := {i |
	some i in left_subject
	audience_ok(grants[i])
}

left_actions := {i |
	some i in left_audience
	actions_ok(grants[i])
}

left_purpose := {i |
	some i in left_actions
	purpose_ok(grants[i])
}

left_depth := {i |
	some i in left_purpose
	depth_ok(grants[i])
}

# Every dimension but the key binding.
eligible := {i |
	some i in left_depth
	resource_ok(grants[i])
}

matched := {i |
	some i in eligible
	binding_ok(grants[i])
}

# The binding kinds the eligible grants allow (unknown kinds in the data are ignored).
offered_bindings := sort({b |
	some i in eligible
	some b in grant_bindings(grants[i])
	b in binding_kinds
})

# The longest max_ttl of the matching grants, and the first grant that gives it.
ttl_by_grant := [[grant_max_ttl(grants[i]), i] | some i in matched]

max_ttl := max([pair[0] | some pair in ttl_by_grant])

deciding_grant := min([pair[1] | some pair in ttl_by_grant; pair[0] == max_ttl])

# (A rule, not a function: rego-cpp 1.5.2 makes functions with "else" very slow.)
deciding_name := grants[deciding_grant].id if {
	is_string(grants[deciding_grant].id)
} else := concat("", ["grants[", format_int(deciding_grant, 10), "]"])

ttl_note := concat("", [
	"; ttl capped from ", format_int(request.ttl, 10),
	" to ", format_int(max_ttl, 10),
]) if {
	request.ttl > max_ttl
} else := ""

# --- deny reasons: the first dimension in which no grant is left -----------------------------

# Reasons are built with concat, never sprintf: rego-cpp 1.5.2's sprintf("%s") wraps a computed
# string in quotes it does not escape.
quoted(xs) := concat(", ", [concat("", ["'", x, "'"]) | some x in xs])

deny_reason := concat("", [
	"caller is bound to tenant '", input.caller.tenant,
	"' and may not act for tenant '", request.tenant, "'",
]) if {
	not caller_tenant_ok
} else := "the policy data has no grants" if {
	count(grants) == 0
} else := concat("", ["no grant lets caller '", input.caller.id, "' ", request_kind]) if {
	count(left_caller) == 0
} else := concat("", ["no grant for tenant '", request.tenant, "'"]) if {
	count(left_tenant) == 0
} else := concat("", ["no grant for subject '", request.subject, "'"]) if {
	count(left_subject) == 0
} else := concat("", ["no grant for audience ", quoted(request.audience)]) if {
	count(left_audience) == 0
} else := concat("", ["no grant allows actions ", quoted(request.actions)]) if {
	count(left_actions) == 0
} else := concat("", ["no grant covers purpose '", request.purpose, "'"]) if {
	count(left_purpose) == 0
} else := concat("", [
	"delegation depth ", format_int(request.parent.depth + 1, 10),
	" exceeds the grants' max_depth",
]) if {
	count(left_depth) == 0
} else := concat("", ["no grant covers resource '", request.resource, "'"]) if {
	count(eligible) == 0
} else := concat("", [
	"binding '", request.binding, "' not allowed (allowed: ", quoted(offered_bindings), ")",
]) if {
	count(matched) == 0
} else := "denied"

# --- the decision ----------------------------------------------------------------------------

default decision := {"allow": false, "reason": "denied by default", "max_ttl": 0, "bindings": []}

decision := {
	"allow": true,
	"reason": concat("", ["allowed by grant ", deciding_name, ttl_note]),
	"max_ttl": max_ttl,
	"bindings": offered_bindings,
} if {
	count(matched) > 0
} else := {
	"allow": false,
	"reason": deny_reason,
	"max_ttl": 0,
	"bindings": offered_bindings,
}
