"""Progressive DeepSSM for ShapeWorks projects.

Learns to predict correspondence particles (a statistical shape model) straight from
an unsegmented 3D image, coarse to fine, and writes the predictions back as ShapeWorks
files. Importing the package does no work and loads neither torch nor VTK.
"""

__version__ = "0.1.0"
