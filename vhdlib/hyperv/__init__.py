"""Hyper-V's side of a chain: which VM uses a disk, and what to run on the host afterwards.

* :mod:`~vhdlib.hyperv.xmlconfig` - VM and checkpoint configurations of Windows Server 2008
  to 2012 R2 (XML), read with a hardened parser (the files are untrusted).
* :mod:`~vhdlib.hyperv.vmcx` - the binary ``.vmcx`` of 2016 and later: detected and refused
  (no public description of the format is good enough to read drive paths from).
* :mod:`~vhdlib.hyperv.paths` - Windows and UNC paths of a configuration -> local files
  (Samba shares from ``testparm -s``; case-insensitive; drive letters guessed by their tail).
* :mod:`~vhdlib.hyperv.owners` - configurations found on roots -> per disk file, the VM and
  controller slot using it and the checkpoints referencing it; ``owner_of(chain)``.
* :mod:`~vhdlib.hyperv.nextsteps` - the PowerShell to run on the Hyper-V host after a cure.
"""
