"""The fair gate's Lua scripts (see `wire/gate.py` for the algorithm, `wire/redis_gate.py`
for how they are called). Each script is the shared LIBRARY of functions followed by its
own body; ARGV[1] is the pool's key prefix, ARGV[2] the inbox lifetime.
"""

from wire.gate import HEADROOM, PAUSE_S, RELEASED_KEEP_S

# KEYS: none (every key derives from the pool's prefix, ARGV[1]).
LIBRARY = """
local P = ARGV[1]
local function num(x) return tonumber(x) or 0 end
local function fmt(x) return string.format('%.17g', x) end

-- A stretch with no call at all means the store stood still (the machine paused: a live
-- worker calls every second): nobody could renew a lease in it, so it counts against
-- none. Every lease moves on by the stretch; a holder that really died lapses at most
-- one stretch later.
local function forgive_pause(t)
  local last = tonumber(redis.call('GET', P .. 'last-call'))
  redis.call('SET', P .. 'last-call', fmt(t))
  if last == nil or t - last <= __PAUSE_S__ then return end
  for _, key in ipairs({'seats', 'queued-lease', 'worker-expiry'}) do
    local leases = redis.call('ZRANGE', P .. key, 0, -1, 'WITHSCORES')
    for i = 1, #leases, 2 do
      redis.call('ZADD', P .. key, tonumber(leases[i + 1]) + t - last, leases[i])
    end
  end
end

local function now()
  local t = redis.call('TIME')
  t = tonumber(t[1]) + tonumber(t[2]) / 1e6
  forgive_pause(t)
  return t
end

local function capacity()
  local total = 0
  for _, c in ipairs(redis.call('HVALS', P .. 'workers')) do total = total + num(c) end
  return total
end

local function weight_of(tenant)
  return tonumber(redis.call('HGET', P .. 'weights', tenant)) or 1
end

local function charge(tenant, cost)
  local counter = num(redis.call('HGET', P .. 'counters', tenant)) + cost / weight_of(tenant)
  redis.call('HSET', P .. 'counters', tenant, fmt(counter))
  if redis.call('ZSCORE', P .. 'waiting', tenant) then
    redis.call('ZADD', P .. 'waiting', counter, tenant)
  end
end

-- A seat ends: its tenant is charged what it was served in place of the reservation, and
-- the pool's mean seat time (for Retry-After) moves towards this one.
local function give_back(seat, cost, t)
  if cost ~= nil then charge(seat.t, cost - tonumber(seat.c)) end
  local hold = tonumber(redis.call('GET', P .. 'hold')) or 1
  redis.call('SET', P .. 'hold', fmt(hold + 0.1 * (t - tonumber(seat.g) - hold)))
end

local function flow_left(tenant)
  redis.call('ZREM', P .. 'waiting', tenant)
  redis.call('SET', P .. 'last-leaver', tenant)
end

local function head_seq(tenant)
  local head = redis.call('LINDEX', P .. 'q:' .. tenant, 0)
  return tonumber(cjson.decode(redis.call('HGET', P .. 'queued', head)).s)
end

-- Least counter first; among equal counters the head that queued first.
local function pick()
  local first = redis.call('ZRANGE', P .. 'waiting', 0, 0, 'WITHSCORES')
  if #first == 0 then return nil end
  local ties = redis.call('ZRANGEBYSCORE', P .. 'waiting', first[2], first[2])
  local best, best_seq = nil, nil
  for _, tenant in ipairs(ties) do
    local seq = head_seq(tenant)
    if best_seq == nil or seq < best_seq then best, best_seq = tenant, seq end
  end
  return best
end

local function unseat(rid)
  local raw = redis.call('HGET', P .. 'seat', rid)
  if not raw then return nil end
  local seat = cjson.decode(raw)
  redis.call('HDEL', P .. 'seat', rid)
  redis.call('ZREM', P .. 'seats', rid)
  if redis.call('HINCRBY', P .. 'tenant-seats', seat.t, -1) <= 0 then
    redis.call('HDEL', P .. 'tenant-seats', seat.t)  -- the hash holds active tenants only
  end
  return seat
end

local function unqueue(rid)
  local raw = redis.call('HGET', P .. 'queued', rid)
  if not raw then return false end
  local tenant = cjson.decode(raw).t
  local key = P .. 'q:' .. tenant
  redis.call('LREM', key, 1, rid)
  redis.call('HDEL', P .. 'queued', rid)
  redis.call('ZREM', P .. 'queued-lease', rid)
  if redis.call('LLEN', key) == 0 then flow_left(tenant) end
  return true
end

-- The head of the tenant's queue takes a seat; its gateway hears of it on its inbox
-- (unless it is `skip`, whose gateway is being answered now).
local function seat_head(tenant, t, skip)
  local rid = redis.call('LPOP', P .. 'q:' .. tenant)
  local ticket = cjson.decode(redis.call('HGET', P .. 'queued', rid))
  redis.call('HDEL', P .. 'queued', rid)
  local deadline = redis.call('ZSCORE', P .. 'queued-lease', rid)
  redis.call('ZREM', P .. 'queued-lease', rid)
  redis.call('HSET', P .. 'seat', rid, cjson.encode({t = tenant, c = ticket.c, g = t}))
  redis.call('ZADD', P .. 'seats', deadline, rid)
  redis.call('HINCRBY', P .. 'tenant-seats', tenant, 1)
  charge(tenant, tonumber(ticket.c))
  if redis.call('LLEN', P .. 'q:' .. tenant) == 0 then flow_left(tenant) end
  if rid ~= skip then
    redis.call('RPUSH', ticket.i, rid)  -- in grant order: its reader pops from the left
    redis.call('EXPIRE', ticket.i, tonumber(ARGV[2]))
  end
end

local function dispatch(t, skip)
  local room = capacity() - redis.call('ZCARD', P .. 'seats')
  while room > 0 do
    local tenant = pick()
    if tenant == nil then break end
    seat_head(tenant, t, skip)
    room = room - 1
  end
end

-- The headroom (see `HEADROOM` in wire/gate.py): a full pool still seats a tenant that
-- holds less than its weighted share of the capacity, among the tenants that hold seats
-- or wait, while the seats stay within the headroom. O(active tenants), full pools only.
local function seat_under_share(tenant, t, skip)
  local cap = capacity()
  if redis.call('ZCARD', P .. 'seats') >= math.floor(cap * (1 + __HEADROOM__)) then return end
  local active = {[tenant] = true}
  local held = redis.call('HGETALL', P .. 'tenant-seats')
  for i = 1, #held, 2 do
    if num(held[i + 1]) > 0 then active[held[i]] = true end
  end
  for _, name in ipairs(redis.call('ZRANGE', P .. 'waiting', 0, -1)) do active[name] = true end
  local total = 0
  for name in pairs(active) do total = total + weight_of(name) end
  local seats = num(redis.call('HGET', P .. 'tenant-seats', tenant))
  if seats + 1 <= cap * weight_of(tenant) / total then seat_head(tenant, t, skip) end
end

local function reap(t)
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', P .. 'worker-expiry', '-inf', t)) do
    redis.call('HDEL', P .. 'workers', w)
    redis.call('ZREM', P .. 'worker-expiry', w)
  end
  for _, rid in ipairs(redis.call('ZRANGEBYSCORE', P .. 'seats', '-inf', t, 'LIMIT', 0, 100)) do
    unseat(rid)
  end
  local lapsed = redis.call('ZRANGEBYSCORE', P .. 'queued-lease', '-inf', t, 'LIMIT', 0, 100)
  for _, rid in ipairs(lapsed) do unqueue(rid) end
  redis.call('ZREMRANGEBYSCORE', P .. 'released', '-inf', t - __RELEASED_KEEP_S__)
end
"""
for _name, _value in (
    ("__PAUSE_S__", PAUSE_S),
    ("__RELEASED_KEEP_S__", RELEASED_KEEP_S),
    ("__HEADROOM__", HEADROOM),
):
    LIBRARY = LIBRARY.replace(_name, repr(_value))

# ARGV: prefix, inbox ttl, rid, tenant, weight, cost, tenant_limit, queue_limit, inbox,
# lease_s, grace_s, max_retry_after_s
ENTER = (
    LIBRARY
    + """
local rid, tenant, weight, cost = ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6])
local tenant_limit, queue_limit = tonumber(ARGV[7]), tonumber(ARGV[8])
local inbox, lease_s, grace_s = ARGV[9], tonumber(ARGV[10]), tonumber(ARGV[11])
local t = now()
reap(t)
-- Entered already (a retry whose first reply was lost): the same answer, nothing doubled.
if redis.call('HEXISTS', P .. 'seat', rid) == 1 then return {'seated', 0, 1} end
if redis.call('HEXISTS', P .. 'queued', rid) == 1 then
  return {'queued', redis.call('LLEN', P .. 'q:' .. tenant), 1}
end
if capacity() == 0 and t - num(redis.call('GET', P .. 'last-worker-seen')) > grace_s then
  return {'no_workers', 0, 1}
end
redis.call('HSET', P .. 'weights', tenant, weight)
local key = P .. 'q:' .. tenant
local queued = redis.call('LLEN', key)
local seated = num(redis.call('HGET', P .. 'tenant-seats', tenant))
if seated + queued >= tenant_limit then return {'tenant_limit', 0, 1} end
if queued >= queue_limit then
  local hold = tonumber(redis.call('GET', P .. 'hold')) or 1
  local wait = math.ceil(queued * math.max(hold, 0.05) / math.max(seated, 1))
  return {'queue_full', queued, math.min(math.max(wait, 1), tonumber(ARGV[12]))}
end
local seq = redis.call('INCR', P .. 'seq')
redis.call('HSET', P .. 'queued', rid, cjson.encode({t = tenant, c = cost, s = seq, i = inbox}))
redis.call('ZADD', P .. 'queued-lease', t + lease_s, rid)
redis.call('RPUSH', key, rid)
if queued == 0 then
  -- VTC's lift: a tenant that starts waiting never counts less than those waiting.
  local floor = redis.call('ZRANGE', P .. 'waiting', 0, 0, 'WITHSCORES')[2]
  if floor == nil then
    local leaver = redis.call('GET', P .. 'last-leaver')
    if leaver then floor = redis.call('HGET', P .. 'counters', leaver) end
  end
  local counter = num(redis.call('HGET', P .. 'counters', tenant))
  if floor ~= nil and tonumber(floor) > counter then
    counter = tonumber(floor)
    redis.call('HSET', P .. 'counters', tenant, fmt(counter))
  end
  redis.call('ZADD', P .. 'waiting', counter, tenant)
end
dispatch(t, rid)
if redis.call('HEXISTS', P .. 'seat', rid) == 0 then seat_under_share(tenant, t, rid) end
if redis.call('HEXISTS', P .. 'seat', rid) == 1 then return {'seated', 0, 1} end
return {'queued', redis.call('LLEN', key), 1}
"""
)

# ARGV: prefix, inbox ttl, rid, cost ('' = keep the reservation), by ('gateway' or
# 'worker'). The gateway gives a seat back or leaves the queue; a worker gives the seat
# back early (see `Gate.release`), and the id is kept in 'released' so that its gateway's
# refresh does not put it back.
LEAVE = (
    LIBRARY
    + """
local rid, cost, by_worker = ARGV[3], tonumber(ARGV[4]), ARGV[5] == 'worker'
local t = now()
local seat = unseat(rid)
if seat then
  give_back(seat, cost, t)
  if by_worker then redis.call('ZADD', P .. 'released', t, rid) end
elseif not by_worker then
  unqueue(rid)
end
reap(t)
dispatch(t, nil)
return 1
"""
)

# ARGV: prefix, inbox ttl, lease_s, n, then n x (rid, tenant, cost) of seated requests,
# then the ids of queued ones. A seat the store lost (Redis restarted without its data, or
# reaped it while its gateway stalled) is put back: its gateway still holds the request
# and its worker still runs it. One its worker gave back is not. Returns the queued ids
# the store no longer holds: their requests enter again.
REFRESH = (
    LIBRARY
    + """
local t = now()
local deadline = t + tonumber(ARGV[3])
local n = tonumber(ARGV[4])
for i = 0, n - 1 do
  local rid, tenant, cost = ARGV[5 + 3 * i], ARGV[6 + 3 * i], tonumber(ARGV[7 + 3 * i])
  if not redis.call('ZSCORE', P .. 'released', rid) then
    if redis.call('HEXISTS', P .. 'seat', rid) == 0 then
      redis.call('HSET', P .. 'seat', rid, cjson.encode({t = tenant, c = cost, g = t}))
      redis.call('HINCRBY', P .. 'tenant-seats', tenant, 1)
    end
    redis.call('ZADD', P .. 'seats', deadline, rid)
  end
end
local missing = {}
for i = 5 + 3 * n, #ARGV do
  local rid = ARGV[i]
  if redis.call('HEXISTS', P .. 'queued', rid) == 1 then
    redis.call('ZADD', P .. 'queued-lease', deadline, rid)
  elseif redis.call('HEXISTS', P .. 'seat', rid) == 1 then
    redis.call('ZADD', P .. 'seats', deadline, rid)  -- seated; the grant is on its way
  else
    table.insert(missing, rid)
  end
end
return missing
"""
)

# ARGV: prefix, inbox ttl, rid... Returns the ids that hold no seat (after reaping).
LAPSED = (
    LIBRARY
    + """
reap(now())
local gone = {}
for i = 3, #ARGV do
  if redis.call('HEXISTS', P .. 'seat', ARGV[i]) == 0 then table.insert(gone, ARGV[i]) end
end
return gone
"""
)

# ARGV: prefix, inbox ttl, worker, capacity (0 = retire), ttl_s, weights (JSON object)
HEARTBEAT = (
    LIBRARY
    + """
local worker, cap = ARGV[3], tonumber(ARGV[4])
local t = now()
if cap > 0 then
  redis.call('HSET', P .. 'workers', worker, cap)
  redis.call('ZADD', P .. 'worker-expiry', t + tonumber(ARGV[5]), worker)
  redis.call('SET', P .. 'last-worker-seen', fmt(t))
  for tenant, weight in pairs(cjson.decode(ARGV[6])) do
    redis.call('HSET', P .. 'weights', tenant, weight)
  end
else
  redis.call('HDEL', P .. 'workers', worker)
  redis.call('ZREM', P .. 'worker-expiry', worker)
end
reap(t)
dispatch(t, nil)
return 1
"""
)
