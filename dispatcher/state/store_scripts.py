"""The store's Lua scripts (dispatcher.state.store): each runs as one atomic step on the account's keys, in the
key layout the store's docstring gives."""

# ARGV[1] is the version read, or 'new': the writer did not read and assumes the account has no record and
# no history yet (a bulk import's first try); anything else there is a conflict, and it reads after all.
# An account without a record whose id is in its shard's moved set (KEYS[8]) left Redis for the record:
# -3, so the engine reopens it from there instead of starting it afresh. Only an account with no record
# pays for the look.
# The last two ARGV: the wall clock and when the event id (ARGV[5]) may lapse ('inf': never). Ids lapsed
# by then go first; a set of ids from before they could lapse becomes a sorted set of ids that never do.
COMMIT = """
local version = redis.call('HGET', KEYS[1], 'v') or '0'
local expected = ARGV[1]
if expected == 'new' then
  if version ~= '0' or redis.call('EXISTS', KEYS[2]) == 1 then return {-1} end
  expected = '0'
end
if version ~= expected then return {-1} end
if version == '0' and redis.call('SISMEMBER', KEYS[8], ARGV[3]) == 1 then return {-3} end
if ARGV[5] ~= '' then
  if redis.call('TYPE', KEYS[6]).ok == 'set' then
    local kept = redis.call('SMEMBERS', KEYS[6])
    redis.call('DEL', KEYS[6])
    for _, id in ipairs(kept) do redis.call('ZADD', KEYS[6], 'inf', id) end
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', '(' .. ARGV[#ARGV - 1])
  if redis.call('ZSCORE', KEYS[6], ARGV[5]) then return {-2} end
  redis.call('ZADD', KEYS[6], ARGV[#ARGV], ARGV[5])
end
local next_version = tonumber(version) + 1
redis.call('HSET', KEYS[1], 'v', next_version, 'd', ARGV[2])
local i = 8
local count = tonumber(ARGV[6])
for _ = 1, count do redis.call('RPUSH', KEYS[2], ARGV[i]); i = i + 1 end
local result = {next_version}
count = tonumber(ARGV[i]); i = i + 1
for _ = 1, count do
  -- new ids, and ids still queued (planned before but not yet claimed: their dispatch may have been lost);
  -- ARGV[i + 1] is its queued-index member, dispatched now (wall clock in ARGV[7])
  if redis.call('HSETNX', KEYS[3], ARGV[i], 'queued') == 1 or redis.call('HGET', KEYS[3], ARGV[i]) == 'queued' then
    table.insert(result, ARGV[i])
    redis.call('ZADD', KEYS[7], ARGV[7], ARGV[i + 1])
  end
  i = i + 2
end
if ARGV[i] ~= '' then redis.call('XADD', KEYS[5], '*', 'e', ARGV[i]) end
if ARGV[4] == '' then redis.call('ZREM', KEYS[4], ARGV[3]) else redis.call('ZADD', KEYS[4], ARGV[4], ARGV[3]) end
if KEYS[9] then redis.call('SADD', KEYS[9], ARGV[3]) end
return result
"""

# An account moved to the record, put back as it left (dispatcher.record.closed): only while its id is
# still in the moved set (KEYS[4]), which it leaves in the same step, so of two restorers one writes.
# ARGV: its id, the version to write, its record, the count of history entries, the entries, the count of
# its claims, (contact id, status) pairs, then (lapse score, event id) pairs of the events it had applied.
RESTORE = """
if redis.call('SISMEMBER', KEYS[4], ARGV[1]) == 0 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[5])
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
local count = tonumber(ARGV[4])
for i = 5, 4 + count do redis.call('RPUSH', KEYS[2], ARGV[i]) end
local i = 5 + count
local claims = tonumber(ARGV[i])
i = i + 1
for _ = 1, claims do redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]); i = i + 2 end
while i < #ARGV do redis.call('ZADD', KEYS[5], ARGV[i], ARGV[i + 1]); i = i + 2 end
redis.call('SREM', KEYS[4], ARGV[1])
return 1
"""

LEASE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
for _, member in ipairs(due) do redis.call('ZADD', KEYS[1], ARGV[2], member) end
return due
"""

# History that no plan reads any more leaves Redis once the record holds it (dispatcher.record.history):
# only if the account is still at the version the trimmer read, so the dropped indexes are still the ones
# it copied. `r` is bumped as for a release (a history cache reads the whole list again); `t` names the
# last pass applied (ARGV[2]), so rows of a pass that never got here can be told apart and dropped.
# ARGV[3] is the record with the dropped attempts marked (dispatcher.record.lookback.marked), or '' when it
# is unchanged; a new record is a new version, so a planner that read the old one retries instead of
# writing it back without the marks. ARGV[4] indexes follow, then the ended claims of the dropped
# attempts, which go too.
TRIM = """
local version = redis.call('HGET', KEYS[1], 'v') or '0'
if version ~= ARGV[1] then return 0 end
if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'v', tonumber(version) + 1, 'd', ARGV[3]) end
local entries = redis.call('LRANGE', KEYS[2], 0, -1)
local drop = {}
local count = tonumber(ARGV[4])
for i = 5, 4 + count do drop[tonumber(ARGV[i]) + 1] = true end
for i = 5 + count, #ARGV do redis.call('HDEL', KEYS[3], ARGV[i]) end
redis.call('DEL', KEYS[2])
for i, entry in ipairs(entries) do
  if not drop[i] then redis.call('RPUSH', KEYS[2], entry) end
end
redis.call('HINCRBY', KEYS[1], 'r', 1)
redis.call('HSET', KEYS[1], 't', ARGV[2])
return 1
"""
