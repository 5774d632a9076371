#!/bin/sh
# The preload library's git workload: init, add 1,000 files, commit, change 100, commit, log,
# diff, gc (which forks pack-objects and runs it with threads), fsck.
#
#     sh git_workload.sh DIR [FILES]
#
# Creates DIR/repo (DIR must exist and be empty). Its stdout is a deterministic function of FILES
# (default 1000): authors, dates and configuration are fixed here, so commit ids are identical
# from run to run, and `cargo xtask preload --check` compares runs with and without
# LD_PRELOAD=libhakmem_preload.so byte for byte. Whether the library is loaded in this shell
# goes to stderr (`allocator: hakmem` or `allocator: not hakmem`).
set -eu
dir=$1
files=${2:-1000}

if grep -q libhakmem_preload /proc/$$/maps; then
    echo "allocator: hakmem" >&2
else
    echo "allocator: not hakmem" >&2
fi

export HOME="$dir" LC_ALL=C TZ=UTC GIT_PAGER=cat PAGER=cat
export GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null
export GIT_AUTHOR_NAME=hakmem GIT_AUTHOR_EMAIL=hakmem@example.invalid
export GIT_COMMITTER_NAME=hakmem GIT_COMMITTER_EMAIL=hakmem@example.invalid
export GIT_AUTHOR_DATE="2024-01-01T00:00:00Z" GIT_COMMITTER_DATE="2024-01-01T00:00:00Z"

cd "$dir"
git init -q -b main repo
cd repo
git config gc.auto 0
git config pack.threads 2

i=0
while [ "$i" -lt "$files" ]; do
    d=dir$((i % 20))
    [ -d "$d" ] || mkdir "$d"
    printf 'file %d of %d\nthe square of %d is %d\n' "$i" "$files" "$i" $((i * i)) >"$d/file$i.txt"
    i=$((i + 1))
done
git add -A
git commit -q -m "$files files"
echo "commit 1: $(git rev-parse HEAD)"
git ls-files | wc -l

i=0
while [ "$i" -lt "$files" ]; do
    printf 'changed in the second commit\n' >>"dir$((i % 20))/file$i.txt"
    i=$((i + 10))
done
git rm -q dir1/file1.txt
git add -A
export GIT_AUTHOR_DATE="2024-01-02T00:00:00Z" GIT_COMMITTER_DATE="2024-01-02T00:00:00Z"
git commit -q -m "change every tenth file"
echo "commit 2: $(git rev-parse HEAD)"

git log --stat --format='%H %an %ad %s' | head -n 40
git diff --shortstat HEAD~1 HEAD
git gc -q
git count-objects -v | grep -E '^(count|in-pack|packs):'
git fsck --full --no-progress
git log --oneline | wc -l
git rev-list --objects --all | wc -l
git show HEAD:dir7/file7.txt
