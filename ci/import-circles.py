#!/usr/bin/env python3
"""Import circles and imports that run back up a layer, per crate.

Usage: python3 ci/import-circles.py udsipc/src udsipc-testkit/src udsipc-cli/src benches/src conformance/src

Reads the `crate::`/`super::`/`self::` paths of each crate's modules (braced
`use` groups expanded, inline paths too; comment
lines and `*tests.rs` files left out), maps them to module files, and prints
the strongly connected components of more than one module (circles) and any
module that imports one of its own ancestors. Text-based: a path it cannot
map is ignored. Not part of ci/test.
"""
import os,re,sys
# crude Rust module import graph per crate src dir: file -> files it imports via crate::/super::/self::
def modpath(root, f):
    rel=os.path.relpath(f, root)[:-3].split('/')
    if rel[-1] in ('mod','lib','main'): rel=rel[:-1]
    return tuple(rel)
def expand(prefix, body):
    # `a::{b, c::{d, e}}` -> a::b, a::c::d, a::c::e (prefix already ends at `{`)
    parts,depth,cur=[],0,''
    for ch in body:
        if ch==',' and depth==0: parts.append(cur); cur=''; continue
        depth+= (ch=='{') - (ch=='}'); cur+=ch
    parts.append(cur)
    for part in parts:
        part=re.sub(r'\s+','',part)
        if not part: continue
        if '{' in part:
            head,rest=part.split('{',1)
            yield from expand(prefix+head, rest[:rest.rfind('}')])
        else:
            yield prefix+part
def paths(src):
    # every `crate::`/`super::`/`self::` path, braced `use` groups expanded
    out=[]
    for mm in re.finditer(r'\b(crate|super|self)((?:::[a-z_][a-z0-9_]*)*)::\{',src):
        i=depth=mm.end(); depth=1
        while depth and i<len(src):
            depth+= (src[i]=='{') - (src[i]=='}'); i+=1
        for full in expand(mm.group(2)+'::', src[mm.end():i-1]):
            out.append((mm.group(1), [x for x in full.split('::') if x][:]))
    for mm in re.finditer(r'\b(crate|super|self)((?:::[a-z_][a-z0-9_]*)+)',src):
        out.append((mm.group(1), mm.group(2).split('::')[1:]))
    return out
def run(root):
    files={}
    for d,_,fs in os.walk(root):
        for x in fs:
            if x.endswith('.rs') and not x.endswith('tests.rs'):
                p=os.path.join(d,x); files[modpath(root,p)]=p
    mods=set(files)
    edges={m:set() for m in mods}
    for m,p in files.items():
        src="\n".join(l for l in open(p).read().splitlines() if not l.strip().startswith("//"))
        src=re.sub(r'#\[cfg\(test\)\]\s*mod tests\s*\{.*',"",src,flags=re.S)
        for kind,path in paths(src):
            base=list(m) if not files[m].endswith(('mod.rs','lib.rs','main.rs')) else list(m)+['__']
            if kind=='crate': cur=[]
            elif kind=='self': cur=base[:-1] if base and base[-1]!='__' else base[:-1]
            else:
                cur=base[:-1]
                if cur and cur[-1]=='__': cur=cur[:-1]
                cur=cur[:-1] if kind=='super' else cur
            cur=[c for c in cur if c!='__']
            target=None
            for i in range(len(path)):
                cand=tuple(cur+path[:i+1])
                if cand in mods: target=cand
                else: break
            # handle super::super
            if target and target!=m: edges[m].add(target)
    # find SCCs
    idx={};low={};st=[];on=set();out=[];c=[0]
    sys.setrecursionlimit(10000)
    def sc(v):
        idx[v]=low[v]=c[0];c[0]+=1;st.append(v);on.add(v)
        for w in edges[v]:
            if w not in idx: sc(w);low[v]=min(low[v],low[w])
            elif w in on: low[v]=min(low[v],idx[w])
        if low[v]==idx[v]:
            comp=[]
            while True:
                w=st.pop();on.discard(w);comp.append(w)
                if w==v:break
            if len(comp)>1: out.append(comp)
    for v in mods:
        if v not in idx: sc(v)
    # upward: a module importing its ancestor module (not root)
    up=[(m,t) for m in edges for t in edges[m] if len(t)>0 and t==m[:len(t)] ]
    return out, up
for root in sys.argv[1:]:
    cyc,up=run(root)
    print(root, "circles:", ['/'.join('::'.join(x) for x in c) for c in cyc], "upward:", [('::'.join(a),'::'.join(b)) for a,b in up])
